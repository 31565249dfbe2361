"""``modelfmt sign``: write a model's ``model.sig`` in the OpenSSF model-signing format
(:func:`modelfmt.signing.sign_model`); ``modelfmt verify --public-key`` checks it."""

from __future__ import annotations

import os

import click

KEY_PASSWORD_ENV = "MODELFMT_KEY_PASSWORD"


@click.command("sign")
@click.argument("model", type=click.Path())
@click.option("--private-key", "private_key", required=True, type=click.Path(), metavar="PEM",
              help="The elliptic-curve private key (P-256, P-384 or P-521) to sign with, a PEM file. An "
                   f"encrypted key's password comes from {KEY_PASSWORD_ENV}.")
@click.option("--signature", type=click.Path(), metavar="PATH",
              help="Where to write the signature (default: model.sig inside the model directory, where "
                   "verifying looks for it).")
@click.option("--certificate-chain", "certificate_chain", multiple=True, type=click.Path(), metavar="PEM",
              help="Sign with a certificate: PEM files holding the private key's certificate and the "
                   "certificates that issued it (repeatable), as `model_signing sign certificate` does.")
def sign(model: str, private_key: str, signature: str | None, certificate_chain: tuple[str, ...]) -> None:
    """Sign MODEL (a directory or URI) in the OpenSSF model-signing format, interoperable with
    `model_signing verify key|certificate`; files that differ from the digests recorded at save are
    refused."""
    from modelfmt.open import resolve
    from modelfmt.signing import sign_model

    path = resolve(model)
    written, fingerprint = sign_model(
        path, private_key, signature=signature, certificate_chain=certificate_chain,
        password=os.environ.get(KEY_PASSWORD_ENV) or None,
    )
    how = "certificate for key" if certificate_chain else "key"
    click.echo(f"signed {model} with {how} {fingerprint}: {written}")
