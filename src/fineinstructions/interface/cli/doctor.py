"""``fineinstructions doctor``: is this machine ready for the embedded default and the
optional backends? Each line is ok / missing / broken, with the fix."""

from __future__ import annotations

import click


@click.command("doctor", short_help="Check this machine for each backend, with the fixes.")
def doctor() -> None:
    """Check, by really using each one, what the embedded default needs (llama.cpp with a
    one-token decode in a child process, the embedded LLM, torch, FAISS, the embedded
    embedder) and the optional backends (transformers, Ray, vLLM). Prints one line per
    component with the fix for each that is missing or broken; exits 1 when the embedded
    default cannot run here."""
    from fineinstructions import __version__
    from fineinstructions.interface.doctor import MISSING, OK, run_checks

    click.echo(f"fineinstructions {__version__}: what the embedded default and the optional backends need")
    blocking = []
    for check in run_checks():
        colour = {OK: "green", MISSING: "yellow"}.get(check.status, "red" if check.status != "note" else None)
        click.echo(f"  {click.style(f'{check.status:<8}', fg=colour)} {check.name:<13} {check.detail}")
        if check.fix:
            click.echo(f"  {'':<8} {'':<13} fix: {check.fix}")
        if check.required and check.status != OK:
            blocking.append(check.name)
    if blocking:
        click.echo(f"the embedded default cannot run here: {', '.join(blocking)} (see the fixes above)")
        raise SystemExit(1)
    click.echo("the embedded default can run here (make demo / fineinstructions demo)")
