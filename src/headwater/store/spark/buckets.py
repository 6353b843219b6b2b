"""A Spark warehouse in a Cloud Storage bucket (``gs://``), written through gcsfs.

The store's own writes (event files, schemas, fences, renames) go through
gcsfs wrapped as a pyarrow filesystem, the same library as the files sink's
``gs://`` targets (the ``gcs`` extra), so one set of credentials and settings
serves both: gcsfs finds Google's default credentials, takes fsspec's
configuration (``FSSPEC_GS_TOKEN`` and the like) and honours
``STORAGE_EMULATOR_HOST``. pyarrow's own GCS filesystem does not read that
variable.

Cloud Storage has no folders; pyarrow's GCS filesystem marks one with an empty
``folder/`` object, and so does this for the event tables, so that a new
warehouse lists them before the first event arrives.
"""

from __future__ import annotations

import fsspec
import pyarrow.fs as pafs

from headwater.core.extras import MissingExtra

SCHEMES = ("gs://", "gcs://")


def bucket_filesystem(url: str, folders: list[str]) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem over ``url`` (``gs://bucket/prefix``) and the warehouse's root
    path in it, with a folder marker for each of ``folders`` (relative to the root)."""
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except ImportError:
        raise MissingExtra("gcs", f"a Spark warehouse on {url}", "gcsfs") from None
    root = root.rstrip("/")
    for folder in folders:
        path = f"{root}/{folder}"
        if not fs.isdir(path):
            fs.pipe_file(f"{path}/", b"")
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), root
