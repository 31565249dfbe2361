"""``modelfmt seal``: record a model's digests again, after an intended edit of its files."""

from __future__ import annotations

import click


@click.command("seal")
@click.argument("model", type=click.Path())
def seal(model: str) -> None:
    """Record the digests of every file of MODEL as it is now (model.digests.json), after an intended
    edit. A signature (model.sig) made before the edit no longer matches: sign the model again."""
    import os

    from modelfmt.errors import ModelNotFoundError
    from modelfmt.integrity import DIGEST_FILE, SIGNATURE_FILE, record_digests
    from modelfmt.model import Model
    from modelfmt.open import check_paths, resolve

    path = resolve(model)
    if not os.path.isfile(os.path.join(path, "MLmodel")):
        raise ModelNotFoundError(
            f"{model!r} is not a model directory (it has no MLmodel file); seal records the digests of a saved model"
        )
    check_paths(path, Model.load(path))  # an MLmodel that reads, naming files inside the directory
    had_signature = os.path.exists(os.path.join(path, SIGNATURE_FILE))
    doc = record_digests(path)
    click.echo(f"sealed: {model}: {len(doc['resources'])} files recorded in {DIGEST_FILE}")
    if had_signature:
        click.echo(f"note: {model}/{SIGNATURE_FILE} was made before; if files changed since, sign the model again")
