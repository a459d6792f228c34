"""One run: its options and context, item statuses and the run folder (context.py), items in
batch task runs (batches.py), and the one path every request takes: cache -> budget -> request
-> cost rows (calls.py, cache.py); what a manifest will cost before it runs (forecast.py).
Imports: errors, options, inputs, audio, text, model, outputs.
"""
