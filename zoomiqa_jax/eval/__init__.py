"""Evaluation: metrics, the evaluation runner and its report."""
