"""The SageMaker inference server: /ping, /invocations, answers that carry their lineage."""
