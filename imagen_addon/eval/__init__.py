"""Evaluation: `imagen eval` (evaluate.py), the attribute judge (judge.py) and its small CNNs (classifier.py)."""
