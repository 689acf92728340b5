"""Scoring a model against the radiologists: its predictions as DICOM SR, and the metrics.

- :mod:`.metrics`: matching, FROC, AP, breast AUC, density kappa, BI-RADS confusion (pure).
"""
