"""The local harness: the embedded stack and (later) the SageMaker-contract job runner.

Everything a user needs to run the pipeline on one machine with no AWS account: a git
server, an S3-compatible store and an MLflow tracking server as local processes.
"""
