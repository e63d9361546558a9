"""Measuring: ``report`` (inspect: counts and bytes), ``fidelity`` (how close a shared model
stays to its original), ``similarity`` and ``suggest`` (what is worth tying).

Import the modules themselves; this package imports nothing, so that ``report`` stays
free of any method package.
"""
