"""Fixtures shared by the integration suites: one moto server (S3, DynamoDB, Streams) for the
whole run, and AWS credentials from the standard chain as a production host has them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cloud_servers import MotoServer, aws_env


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with MotoServer(tmp_path_factory.mktemp("moto") / "moto.log") as moto:
        yield moto


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Static test credentials in the environment; no instance-metadata lookups."""
    for name, value in aws_env().items():
        monkeypatch.setenv(name, value)
