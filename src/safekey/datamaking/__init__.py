"""STAR-1 data making: collect → dedup → classify → reason → score → select → benign.

Each step is a module with one public entry point; :mod:`.pipeline` runs them in order with resume.
"""
