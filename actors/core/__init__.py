"""The supervision core: actors, supervisors, child specs, paths, timers and exit reasons.

Imports nothing else of Flotilla.
"""
