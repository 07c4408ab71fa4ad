"""Start-up caches (tag table, checked GGUF headers) and a text path that leaves the image stage alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tipo.tags import TagTable


def _load(monkeypatch, folder):
    monkeypatch.setenv("TIPO_CACHE", str(folder))
    return TagTable.load_packaged()


def test_the_tag_table_cache_gives_the_same_table_and_survives_damage(monkeypatch, tmp_path):
    monkeypatch.setenv("TIPO_CACHE", "off")
    fresh = TagTable.load_packaged()
    first = _load(monkeypatch, tmp_path)  # parses and writes the cache
    files = list(tmp_path.glob("tag-table-*.marshal"))
    assert len(files) == 1 and not list(tmp_path.glob(".*.tmp"))
    second = _load(monkeypatch, tmp_path)  # reads it
    for table in (first, second):
        assert table.categories == fresh.categories and table.aliases == fresh.aliases and table.counts == fresh.counts
        assert table._sorted_names == fresh._sorted_names and table._sorted_content == fresh._sorted_content
    files[0].write_bytes(files[0].read_bytes()[:1000])  # truncated: ignored and rewritten
    assert _load(monkeypatch, tmp_path).categories == fresh.categories
    assert len(files[0].read_bytes()) > 1000


def test_an_unwritable_cache_folder_is_no_error(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert len(_load(monkeypatch, blocker / "sub").categories) > 1000


def test_a_checked_gguf_header_is_reused_until_the_file_changes(monkeypatch, tmp_path, tiny_model):
    pytest.importorskip("gguf")
    from tipo.backends import validate

    monkeypatch.setenv("TIPO_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "m.gguf"
    model.write_bytes(tiny_model.gguf_f32.read_bytes())
    header = validate.read_gguf(model)
    assert len(list((tmp_path / "cache").glob("gguf-*.marshal"))) == 1
    calls = []
    monkeypatch.setattr(validate, "_check_gguf", lambda *a: calls.append(a) or header)
    assert validate.read_gguf(model) == header and not calls  # from the cache
    data = bytearray(model.read_bytes())
    os.utime(model, ns=(1, 1))  # another modification time: read again
    assert validate.read_gguf(model) == header and len(calls) == 1
    model.write_bytes(bytes(data[: len(data) // 2]))  # a truncated file is never served from the cache
    monkeypatch.undo()
    monkeypatch.setenv("TIPO_CACHE", str(tmp_path / "cache"))
    with pytest.raises(Exception, match="truncated|corrupt|unreadable"):
        validate.read_gguf(model)


def test_the_text_commands_do_not_import_the_image_stage(tmp_path):
    code = ("import sys, io, contextlib; from tipo.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['expand', '1girl', '--dry-run'])\n"
            "print(sorted(m for m in sys.modules if m.startswith('tipo.image') or m in ('torch', 'diffusers')))")
    env = dict(os.environ, TIPO_CACHE=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert run.stdout.strip() == "[]"


def test_known_tags_are_cached_by_the_trained_list_and_survive_damage(monkeypatch, tmp_path, tiny_model):
    from tipo import Expander, Request, plan

    monkeypatch.setenv("TIPO_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "m.gguf"
    model.write_bytes(tiny_model.gguf_f32.read_bytes())
    listed = tmp_path / "m.tags.txt"

    def known(tags: list[str]) -> set[str]:
        listed.write_text("".join(f"{t}\t1\n" for t in tags))
        with Expander(model, n_threads=1, known_tags_only=True) as ex:
            return set(ex._known_tags(plan(Request("1girl"))).categories)

    assert known(["forest", "smile", "nude"]) == {"forest", "smile"}  # nude is above the default rating
    files = list((tmp_path / "cache").glob("known-tags-*.marshal"))
    assert len(files) == 1
    assert known(["forest", "smile", "nude"]) == {"forest", "smile"}  # from the cache
    assert known(["long hair"]) == {"long hair"}  # another list (a retrained model): never the old tags
    assert len(list((tmp_path / "cache").glob("known-tags-*.marshal"))) == 2
    for damaged in (b"", files[0].read_bytes()[:-7], files[0].read_bytes().replace(b"forest", b"fxrest")):
        files[0].write_bytes(damaged)  # truncated or altered: ignored and rebuilt
        assert known(["forest", "smile", "nude"]) == {"forest", "smile"}
