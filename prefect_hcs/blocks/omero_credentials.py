"""The OMERO credentials Block: where an OMERO server is and how to log in.

Runs and deployments refer to it by name (``{"credentials_block": "my-omero"}`` as the storage
options of an ``omero://`` URL), so the password travels neither in flow-run parameters nor in
plans: each worker process loads the block and connects itself.
"""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from prefect_hcs.storage.omero_gateway import BlitzGatewayAdapter, OmeroAdapter

_DOCS = "https://github.com/prefect-hcs/prefect-hcs/blob/main/docs/omero.md"


class OmeroCredentials(Block):
    """Login to an OMERO server for reading plates and attaching results as FileAnnotations."""

    _block_type_name: ClassVar[str] = "OMERO Credentials"
    _block_type_slug: ClassVar[str] = "omero-credentials"
    _description: ClassVar[str] = (
        "Host, port, user, password and group of an OMERO server. prefect-hcs reads plates "
        "from it and attaches results to them as FileAnnotations."
    )
    _documentation_url: ClassVar[str] = _DOCS
    _code_example: ClassVar[str] = (
        "```python\nfrom prefect_hcs.blocks.omero_credentials import OmeroCredentials\n\n"
        'adapter = OmeroCredentials.load("BLOCK_NAME").connect()\n```'
    )

    host: str = Field(description="Host name or address of the OMERO server.")
    port: int = Field(default=4064, description="Port of the OMERO server (Ice; 4064 by default).")
    username: str = Field(description="OMERO user name.")
    password: SecretStr = Field(description="OMERO password; stored encrypted, never logged.")
    group: str | None = Field(
        default=None,
        description="OMERO group to log in to; empty means the user's default group.",
    )
    secure: bool = Field(default=True, description="Use an encrypted (SSL) connection.")
    standin_dir: str | None = Field(
        default=None,
        description=(
            "For tests and demos only: use the OMERO stand-in in this folder instead of a "
            "server (host, port and secure are then ignored)."
        ),
    )

    def adapter(self) -> OmeroAdapter:
        """A gateway adapter for these credentials (it logs in on first use)."""
        if self.standin_dir is not None:
            from prefect_hcs.storage.omero_standin import StandinAdapter

            return StandinAdapter(self.standin_dir, self.username, self.password, group=self.group)
        return BlitzGatewayAdapter(
            self.host,
            self.username,
            self.password,
            port=self.port,
            group=self.group,
            secure=self.secure,
        )

    def connect(self) -> OmeroAdapter:
        """An adapter that has already logged in (so bad credentials fail here, clearly)."""
        adapter = self.adapter()
        adapter.connect()
        return adapter

    def storage_options(self) -> dict[str, str]:
        """Storage options for ``omero://`` URLs that name this (saved) block, not its secret."""
        if not self._block_document_name:
            raise ValueError(
                "save the OmeroCredentials block first (block.save('name')): storage options "
                "refer to it by name so that the password never travels with a run"
            )
        return {"credentials_block": self._block_document_name}
