"""``fedrec certs``: the TLS certificates and SuperNode keys of a deployment."""

from __future__ import annotations

from pathlib import Path

import typer

from fedrec.cli.common import fail, warn

certs_app = typer.Typer(no_args_is_help=True, help="TLS certificates and SuperNode keys.")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


@certs_app.command("init")
def certs_init(
    directory: Path = typer.Argument(..., help="folder for the CA, the server certificate and SuperNode keys"),
    host: list[str] = typer.Option(..., "--host", help="DNS name or IP address clients use to reach the server "
                                   "(repeat for several); each becomes a SubjectAlternativeName"),
    force: bool = typer.Option(False, help="overwrite a non-empty folder (a new CA: every client needs the new ca.crt)"),
    days: int = typer.Option(825, help="validity of the server certificate in days"),
    loopback: bool = typer.Option(True, help="also name 127.0.0.1 and localhost (the server's own tools connect there)"),
) -> None:
    """Make a CA and a server certificate for the given hosts (private keys 0600)."""
    from fedrec.runtime.certs import init_certs

    hosts = list(dict.fromkeys([*host, *(LOOPBACK_HOSTS if loopback else ())]))
    try:
        paths = init_certs(directory, hosts, force=force, days=days)
    except (ValueError, OSError) as err:  # OSError: FileExistsError (not empty), or the folder cannot be written
        fail(str(err))
    _warn_if_committable(directory, "ca.key and server.key")
    typer.echo(f"CA certificate      {paths.ca_cert}  (give it to every client: --ca)")
    typer.echo(f"CA key (0600)       {paths.ca_key}  (keep it offline)")
    typer.echo(f"server certificate  {paths.server_cert}  for {', '.join(hosts)}")
    typer.echo(f"server key (0600)   {paths.server_key}")
    typer.echo(f"next: fedrec certs client NAME {directory}")


@certs_app.command("client")
def certs_client(
    name: str = typer.Argument(..., help="the device's name (letters, digits, - and _)"),
    directory: Path = typer.Argument(..., help="the folder made by `fedrec certs init`"),
) -> None:
    """Make a SuperNode key pair: DIR/supernodes/NAME (private, 0600) and NAME.pub."""
    from fedrec.runtime.certs import add_client

    try:
        keys = add_client(name, directory)
    except (ValueError, OSError) as err:  # OSError: FileExistsError, FileNotFoundError, cannot write
        fail(str(err))
    _warn_if_committable(directory, f"supernodes/{name}")
    typer.echo(f"private key (0600)  {keys.private_key}  (copy to the device: --key)")
    typer.echo(f"public key          {keys.public_key}  (on the server: fedrec server register-client)")


def _warn_if_committable(directory: Path, private_keys: str) -> None:
    """Warn when ``directory`` lies in a git work tree that does not ignore it."""
    from fedrec.runtime.certs import unignored_git_work_tree

    if (work_tree := unignored_git_work_tree(directory)) is not None:
        warn(f"{directory.resolve()} is inside the git work tree {work_tree} and git does not ignore it: "
             f"the private keys in it ({private_keys}) can be committed by mistake. Add the folder to "
             f".gitignore, or keep the certificates outside the repository.")
