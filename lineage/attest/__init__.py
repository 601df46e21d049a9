"""Evidence a third party can check with a public key alone.

Everything the product claims about a dataset or a model is also stated in a signed in-toto
Statement (v1) inside a DSSE envelope, signed with an asymmetric key (ECDSA P-256 from a key
file, or an AWS KMS key) where the bytes are made: the processing job signs its dataset
version, the training job its model (SLSA Provenance v1, plus an OpenSSF `model.sig` that
the stock `python -m model_signing` verifies), the operator's CLI its decisions (promote,
deploy, erase, audit report). The digests of those statements, the consent events and the
erasure events are leaves of an append-only Merkle transparency log (RFC 6962 shape) whose
signed tree heads make any truncation or rewrite of history detectable by anyone who holds
an older head: the statements carry one.

Modules: `keys` (key files, KMS, the trust store), `envelopes` (DSSE sign/verify, statement
digests), `statements` (what each statement says), `modelsig` (OpenSSF model signing),
`tlog` (the transparency log), `checks` (the signature checks `trace`, `deploy` and the
server run), `bundle` (an offline evidence bundle and its verification).
"""
