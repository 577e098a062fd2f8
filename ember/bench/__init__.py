"""Benchmarks: Ember against its peers (onnxruntime, OpenVINO, torch) on one model, side by side.

    ember bench resnet8 --threads 1              # a zoo model or an .onnx file; prints a table
    python -m ember.bench.zoo --models mlp       # what `make bench` runs: JSON + Markdown

Each runtime runs in its own worker process (worker.py, runners.py) kept alive for the whole
benchmark; harness.py drives them in interleaved rounds so drift of the machine hits all alike;
stats.py summarizes the timings, report.py renders them, machine.py says where they were taken.
This package imports nothing heavy at import time: workers must start light.
"""
