"""Reports: the progress bar and run summary (with Prefect artifacts), past runs read back from
the datasets (`audiobatch runs`), and one run's HTML page (report.py): what it shows per kind
of run (sections.py, where a new dataset adds its section) and its charts (charts.py).
Imports: errors, outputs.
"""
