"""The example manifests and their audio, installed as the package data `audiobatch.examples`
(the demo reads them from there, so it works from an installed wheel too)."""
