"""Reports: the progress bar and run summary (with Prefect artifacts), past runs read back from
the datasets (`audiobatch runs`), and one run's HTML page. Imports: errors, outputs.
"""
