"""Datasets: ingestion, quality report, buckets, augmentation."""
