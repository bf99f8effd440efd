"""IQA datasets: label files, score scales, synthetic degradations, builders and pipelines."""
