"""The SageMaker Processing job: sample, split, manifest and publish a dataset with DVC."""
