"""Record-level audits: was a patient in a model's data, which models does a withdrawal
affect, did every patient of a model consent, is a withdrawn patient excluded since a date,
and the evidence report a regulator asks for."""
