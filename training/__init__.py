"""The SageMaker Training job: fetch an exact DVC tag, train MobileNetV3-Small, log lineage."""
