"""fsspec's own conformance suite (`fsspec.tests.abstract`) run against the omero filesystem.

The suite writes below an outputs folder of a stand-in plate, so every file it creates is a
FileAnnotation on that plate, and copy/put/get/pipe/open all go through the gateway adapter.

What cannot apply to a virtual filesystem: OMERO has no directories, so a folder exists only while
a FileAnnotation lies below it and `makedirs()` of an empty folder leaves nothing behind. The
fixture `supports_empty_directories` is therefore False; fsspec then runs the "no empty
directories" variant of the tests that would otherwise create an empty target folder first
(test_copy_file_to_existing_directory, test_copy_file_to_new_directory,
test_copy_file_to_file_in_existing_directory, test_copy_file_to_file_in_new_directory,
test_copy_directory_to_existing_directory, test_copy_glob_to_existing_directory,
test_copy_list_of_files_to_existing_directory and their put counterparts). No test is skipped.
"""

from __future__ import annotations

import posixpath

import numpy as np
import pytest
from fsspec.tests import abstract

from prefect_hcs.storage.omero_fs import OmeroFileSystem
from prefect_hcs.testing.omero_standin import StandinServer, standin_host


@pytest.fixture(scope="module")
def _standin(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int]:
    root = tmp_path_factory.mktemp("omero-conformance")
    server = StandinServer.create(root)
    server.add_user("alice", "pw-alice", group="lab")
    pixels = np.zeros((1, 1, 1, 8, 8), dtype="uint8")
    plate_id = server.add_plate("conf", "lab", {"A01": [pixels]})
    return str(root), plate_id


class OmeroFixtures(abstract.AbstractFixtures):
    @pytest.fixture
    def fs(self, _standin: tuple[str, int]) -> OmeroFileSystem:
        directory, _ = _standin
        return OmeroFileSystem(
            host=standin_host(directory),
            user="alice",
            password="pw-alice",
            skip_instance_cache=True,
        )

    @pytest.fixture
    def fs_path(self, _standin: tuple[str, int]) -> str:
        return f"plate_{_standin[1]}/outputs/conformance"

    @pytest.fixture
    def fs_join(self):  # type: ignore[no-untyped-def]
        return posixpath.join

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        return False


class TestOmeroCopy(abstract.AbstractCopyTests, OmeroFixtures):
    pass


class TestOmeroGet(abstract.AbstractGetTests, OmeroFixtures):
    pass


class TestOmeroPut(abstract.AbstractPutTests, OmeroFixtures):
    pass


class TestOmeroPipe(abstract.AbstractPipeTests, OmeroFixtures):
    pass


class TestOmeroOpen(abstract.AbstractOpenTests, OmeroFixtures):
    pass


def test_suite_ran_against_annotations(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The suite's files really are FileAnnotations: a pipe shows up in the stand-in's tables."""
    server = StandinServer.create(tmp_path)
    server.add_user("alice", "pw", group="lab")
    plate_id = server.add_plate("p", "lab", {"A01": [np.zeros((1, 1, 1, 4, 4), "uint8")]})
    fs = OmeroFileSystem(host=standin_host(str(tmp_path)), user="alice", password="pw")
    fs.pipe(f"plate_{plate_id}/outputs/x/y.bin", b"abc")
    counts = server.counts()
    assert (counts["annotations"], counts["originalfiles"], counts["links"]) == (1, 1, 1)
    assert fs.cat(f"omero://plate_{plate_id}/outputs/x/y.bin") == b"abc"
