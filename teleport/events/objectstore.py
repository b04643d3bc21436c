"""Object stores for session recordings: S3 (and S3-compatible servers) and Google Cloud Storage.

`audit_sessions_uri: s3://bucket/prefix` or `gs://bucket/prefix` names one. A store holds each
recording as the same two objects the `dir` layout has as files, `<prefix>/<sid>.chunks.gz` and
`<prefix>/<sid>.events.gz`, written chunks first, so a recording whose events object exists is
whole. Objects are written once (same key, same bytes: an upload repeated after a failure
replaces nothing but itself) and never changed. The calls block: callers run them in threads,
as the official clients (boto3, google-cloud-storage) are synchronous; reads stream in pieces.

S3 URI options, as Teleport takes them: `region` (else `storage.region`, else the AWS chain's
default), `endpoint` (an S3-compatible server; buckets are then addressed in the path unless
`path_style=false`), `insecure` (skip the endpoint's TLS check), `disablesse` (no server-side
encryption; it is AES256 by default), `sse_kms_key` (aws:kms with that key), `acl` (a canned
ACL for each object), `use_fips_endpoint`. GCS: `credentialsPath` (else `storage.credentials_path`,
else the Google chain), `projectID`, `endpoint` (a compatible server). Credentials always come
from the standard chains or files, never from the URI.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from teleport.errors import AccessDenied, BadParameter, ConnectionProblem, NotFound, TeleportError
from teleport.utils import aws

#: Bytes per streamed read and per multipart part: S3's parts must be at least 5 MiB.
READ_SIZE = 256 * 1024
PART_SIZE = 8 * 1024 * 1024
#: An unfinished multipart upload older than this belongs to a server that died mid-upload.
ABANDONED_UPLOAD_AGE = timedelta(days=1)
#: How long one call to a store may keep retrying before it reports the store unreachable.
RETRY_SECONDS = 10.0
_S3_OPTIONS = frozenset({"region", "endpoint", "path_style", "insecure", "disablesse",
                         "sse_kms_key", "acl", "use_fips_endpoint"})
_GCS_OPTIONS = frozenset({"credentialsPath", "projectID", "endpoint"})
_S3_ACLS = frozenset({"private", "public-read", "public-read-write", "authenticated-read",
                      "aws-exec-read", "bucket-owner-read", "bucket-owner-full-control"})
SCHEMES = ("s3", "gs")


class ObjectStore(Protocol):
    """What recordings need of a bucket; every call blocks (run it in a thread)."""

    #: The URI without secrets, for messages.
    uri: str

    def ensure_bucket(self) -> None:
        """Check the bucket can be reached, making it if it does not exist."""
        ...

    def put_file(self, name: str, path: Path) -> None:
        """Upload a file as object `name` (multipart when large)."""
        ...

    def read(self, name: str) -> Iterator[bytes]:
        """Yield object `name` in pieces; NotFound if there is none."""
        ...

    def exists(self, name: str) -> bool: ...

    def names(self, suffix: str) -> list[str]:
        """Return the names (without the prefix) of the objects ending with suffix."""
        ...


def _flag(uri: str, options: dict[str, str], name: str) -> bool:
    value = options.get(name, "false").lower()
    if value not in ("true", "false", "1", "0", "yes", "no", ""):
        raise BadParameter(f"audit_sessions_uri {uri!r}: {name} must be true or false")
    return value in ("true", "1", "yes", "")


def _parse(uri: str, allowed: frozenset[str]) -> tuple[str, str, dict[str, str]]:
    parts = urlsplit(uri)
    if not parts.netloc:
        raise BadParameter(f"audit_sessions_uri {uri!r}: name the bucket, e.g. "
                           f"{parts.scheme}://my-bucket/records")
    options: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in allowed:
            raise BadParameter(f"audit_sessions_uri {uri!r}: unknown option {name!r} (known: "
                               + ", ".join(sorted(allowed)) + ")")
        options[name] = value
    return parts.netloc, parts.path.strip("/"), options


def open_object_store(uri: str, *, region: str | None = None,
                      credentials_path: Path | None = None) -> ObjectStore:
    """Parse an `s3://` or `gs://` URI into its store; no connection is made yet."""
    scheme = urlsplit(uri).scheme
    if scheme == "s3":
        bucket, prefix, options = _parse(uri, _S3_OPTIONS)
        return S3Store(uri, bucket, prefix, options, region)
    if scheme == "gs":
        bucket, prefix, options = _parse(uri, _GCS_OPTIONS)
        return GcsStore(uri, bucket, prefix, options, credentials_path)
    raise BadParameter(f"audit_sessions_uri {uri!r}: not an object store URI")


def _key(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


class S3Store:
    """A bucket (and prefix) on S3 or an S3-compatible server, through boto3."""

    def __init__(self, uri: str, bucket: str, prefix: str, options: dict[str, str],
                 region: str | None) -> None:
        self.uri = uri.split("?", 1)[0]
        #: A multipart upload this old was left by a server that died (see ensure_bucket).
        self.abandoned_after = ABANDONED_UPLOAD_AGE
        self.bucket = bucket
        self.prefix = prefix
        endpoint = options.get("endpoint") or None
        acl = options.get("acl")
        if acl is not None and acl not in _S3_ACLS:
            raise BadParameter(f"audit_sessions_uri {uri!r}: acl {acl!r} is not a canned ACL "
                               "(e.g. bucket-owner-full-control)")
        self.extra: dict[str, str] = {}
        if not _flag(uri, options, "disablesse"):
            self.extra["ServerSideEncryption"] = "AES256"
            if options.get("sse_kms_key"):
                self.extra.update(ServerSideEncryption="aws:kms",
                                  SSEKMSKeyId=options["sse_kms_key"])
        if acl:
            self.extra["ACL"] = acl
        path_style = _flag(uri, options, "path_style") if "path_style" in options \
            else endpoint is not None
        self.client = aws.client("s3", region=options.get("region") or region,
                                 endpoint=endpoint, fips=_flag(uri, options, "use_fips_endpoint"),
                                 path_style=path_style, verify=not _flag(uri, options, "insecure"))

    def _errors(self, name: str = "") -> contextlib.AbstractContextManager[None]:
        return aws.errors(f"{self.uri}/{name}" if name else self.uri)

    def ensure_bucket(self) -> None:
        """Check the bucket (made if missing), and abort the multipart uploads under our prefix
        that a server killed mid-upload left behind (S3 keeps, and bills, their parts)."""
        try:
            with self._errors():
                self.client.head_bucket(Bucket=self.bucket)
        except NotFound:
            with self._errors():
                self.client.create_bucket(Bucket=self.bucket)
        cutoff = datetime.now(timezone.utc) - self.abandoned_after
        with self._errors():
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=_key(self.prefix, ""))
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] <= cutoff:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])

    def put_file(self, name: str, path: Path) -> None:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
                                use_threads=False)
        with self._errors(name):
            self.client.upload_file(str(path), self.bucket, _key(self.prefix, name),
                                    ExtraArgs=dict(self.extra), Config=config)

    def read(self, name: str) -> Iterator[bytes]:
        with self._errors(name):
            body = self.client.get_object(Bucket=self.bucket,
                                          Key=_key(self.prefix, name))["Body"]
        try:
            with self._errors(name):
                yield from body.iter_chunks(READ_SIZE)
        finally:
            body.close()

    def exists(self, name: str) -> bool:
        try:
            with self._errors(name):
                self.client.head_object(Bucket=self.bucket, Key=_key(self.prefix, name))
        except NotFound:
            return False
        return True

    def names(self, suffix: str) -> list[str]:
        start = _key(self.prefix, "")
        found = []
        with self._errors():
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start)
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"][len(start):]
                    if name.endswith(suffix) and "/" not in name:
                        found.append(name)
        return found


class GcsStore:
    """A bucket (and prefix) on Google Cloud Storage or a compatible server."""

    def __init__(self, uri: str, bucket: str, prefix: str, options: dict[str, str],
                 credentials_path: Path | None) -> None:
        self.uri = uri.split("?", 1)[0]
        self.bucket_name = bucket
        self.prefix = prefix
        path = options.get("credentialsPath") or credentials_path
        if path is not None and not Path(path).is_file():
            raise BadParameter(f"audit_sessions_uri {uri!r}: cannot read credentials {path}")
        self._credentials_path = Path(path) if path is not None else None
        self._project = options.get("projectID") or None
        self._endpoint = options.get("endpoint") or None
        self._client: Any = None

    @staticmethod
    def _calls() -> dict[str, Any]:
        """Short timeouts and retries: the client's defaults retry a dead server for minutes."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        return {"timeout": (aws.CONNECT_TIMEOUT, aws.READ_TIMEOUT),
                "retry": DEFAULT_RETRY.with_timeout(RETRY_SECONDS)}

    def _bucket(self) -> Any:
        if self._client is None:
            from google.cloud import storage

            options = {"api_endpoint": self._endpoint} if self._endpoint else None
            with self._errors():
                if self._credentials_path is not None:
                    self._client = storage.Client.from_service_account_json(
                        str(self._credentials_path), project=self._project,
                        client_options=options)
                else:
                    self._client = storage.Client(project=self._project, client_options=options)
        return self._client.bucket(self.bucket_name)

    @contextlib.contextmanager
    def _errors(self, name: str = "") -> Iterator[None]:
        what = f"{self.uri}/{name}" if name else self.uri
        try:
            yield
        except TeleportError:
            raise
        except Exception as err:
            raise _gcs_error(err, what) from None

    def ensure_bucket(self) -> None:
        bucket = self._bucket()
        with self._errors():
            if not bucket.exists(**self._calls()):
                bucket.create(**self._calls())

    def put_file(self, name: str, path: Path) -> None:
        # A chunk size makes the upload resumable, in parts, rather than one request.
        blob = self._bucket().blob(_key(self.prefix, name), chunk_size=PART_SIZE)
        with self._errors(name):
            blob.upload_from_filename(str(path), **self._calls())

    def read(self, name: str) -> Iterator[bytes]:
        blob = self._bucket().blob(_key(self.prefix, name))
        with self._errors(name):
            reader = blob.open("rb", chunk_size=READ_SIZE * 4, **self._calls())
        try:
            with self._errors(name):
                while piece := reader.read(READ_SIZE):
                    yield piece
        finally:
            with contextlib.suppress(Exception):
                reader.close()

    def exists(self, name: str) -> bool:
        blob = self._bucket().blob(_key(self.prefix, name))
        with self._errors(name):
            return bool(blob.exists(**self._calls()))

    def names(self, suffix: str) -> list[str]:
        start = _key(self.prefix, "")
        bucket = self._bucket()
        with self._errors():
            return [name for blob in bucket.client.list_blobs(bucket, prefix=start,
                                                              **self._calls())
                    if (name := blob.name[len(start):]).endswith(suffix) and "/" not in name]


def _gcs_error(err: Exception, what: str) -> TeleportError:
    """One line of ours for an error of google-cloud-storage or its HTTP transport."""
    from google.api_core import exceptions as gx
    from google.auth import exceptions as gauth

    detail = " ".join(str(getattr(err, "message", err)).split())[:300]
    if isinstance(err, gx.NotFound):
        return NotFound(f"{what}: not found")
    if isinstance(err, (gx.Forbidden, gx.Unauthorized, gauth.DefaultCredentialsError,
                        gauth.RefreshError)):
        return AccessDenied(f"{what}: {detail}")
    if isinstance(err, (gx.BadRequest, ValueError)):
        return BadParameter(f"{what}: {detail}")
    return ConnectionProblem(f"{what}: {detail or type(err).__name__}")
