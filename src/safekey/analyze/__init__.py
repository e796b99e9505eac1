"""The SafeKey paper's analyses, as functions over records and model folders (§3).

* :mod:`.attention` — how much the key sentence K attends to the understanding U vs the query.
* :mod:`.probe` — linear separability of harmful/benign at the end of U (cross-validated AUROC).
* :mod:`.kl` — KL between two models' next-token distributions after k prefilled tokens.

Each writes one JSON file with ``"kind": "analysis-…"`` that :mod:`safekey.report` picks up.
Inputs are files (records with question, response, u_end, k_end, unsafe) and model folders; no
other stage is imported.
"""
