# The image targets, one source of truth for names, tags and build args.
#
#   docker buildx bake                                  # all three, tagged model-lineage/<name>:latest
#   REGISTRY=123456789012.dkr.ecr.eu-west-1.amazonaws.com TAG=1.2.0 docker buildx bake
#
# Without buildx, `make images` builds exactly these targets with plain `docker build`
# (`python -m local.images plan` prints the commands it derives from this file).

variable "REGISTRY" {
  default = ""
}

variable "TAG" {
  default = "latest"
}

variable "BASE_IMAGE" {
  default = "python:3.11-slim-bookworm"
}

variable "VERSION" {
  default = "0.1.0"
}

variable "REVISION" {
  default = "unknown"
}

variable "CREATED" {
  default = "unknown"
}

variable "PREFIX" {
  default = notequal("", REGISTRY) ? "${REGISTRY}/" : ""
}

group "default" {
  targets = ["processing", "training", "inference"]
}

target "_common" {
  context    = "."
  dockerfile = "images/Dockerfile"
  platforms  = ["linux/amd64"]
  args = {
    BASE_IMAGE = BASE_IMAGE
    VERSION    = VERSION
    REVISION   = REVISION
    CREATED    = CREATED
  }
}

target "processing" {
  inherits = ["_common"]
  target   = "processing"
  tags     = ["${PREFIX}model-lineage/processing:${TAG}"]
}

target "training" {
  inherits = ["_common"]
  target   = "training"
  tags     = ["${PREFIX}model-lineage/training:${TAG}"]
}

target "inference" {
  inherits = ["_common"]
  target   = "inference"
  tags     = ["${PREFIX}model-lineage/inference:${TAG}"]
}

# The local harness's services (local/compose.yaml): built by `make stack-image`, never pushed.
group "stack" {
  targets = ["stack"]
}

target "stack" {
  inherits = ["_common"]
  target   = "stack"
  tags     = ["${PREFIX}model-lineage/stack:${TAG}"]
}
