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
    from tipo.tags import _IndexedTable

    monkeypatch.setenv("TIPO_CACHE", "off")
    fresh = TagTable.load_packaged()
    probes = ["long hair", "Longhair", "1girl", "score_9", "forest", "qqqzz", "\ud800", "", "é", *list(fresh.aliases)[:300:7]]
    first = _load(monkeypatch, tmp_path)  # parses and writes the cache
    files = list(tmp_path.glob("tag-index-*.marshal"))
    assert len(files) == 1 and not list(tmp_path.glob(".*.tmp"))
    second = _load(monkeypatch, tmp_path)  # reads it: lookups from the index, no dictionaries built
    assert type(second) is _IndexedTable
    for p in probes:
        assert (second.canonical(p), second.category(p), second.is_known(p)) == \
            (fresh.canonical(p), fresh.category(p), fresh.is_known(p))
    assert "_dicts" not in second.__dict__
    for table in (first, second):
        assert table.categories == fresh.categories and table.aliases == fresh.aliases and table.counts == fresh.counts
        assert list(table.categories) == list(fresh.categories)  # the file's order
        assert table._sorted_names == fresh._sorted_names and table._sorted_content == fresh._sorted_content
    data = files[0].read_bytes()
    flipped = [data[:i] + bytes([data[i] ^ 1]) + data[i + 1:] for i in (60, len(data) // 4, len(data) // 3)]
    for damaged in (data[:1000], data[:-50], *flipped):
        files[0].write_bytes(damaged)  # truncated or altered: ignored and rewritten
        table = _load(monkeypatch, tmp_path)
        assert table.categories == fresh.categories and [table.canonical(p) for p in probes] == \
            [fresh.canonical(p) for p in probes]
        assert files[0].read_bytes() == data
    # the part read only when the dictionaries are needed, altered or cut after the file was opened
    for damage in (lambda d: d[:-9] + b"x" * 9, lambda d: d[: len(d) - 100]):
        opened = _load(monkeypatch, tmp_path)
        assert type(opened) is _IndexedTable
        files[0].write_bytes(damage(data))
        assert opened.aliases == fresh.aliases and opened._sorted_content == fresh._sorted_content
        files[0].write_bytes(data)


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


def test_the_cache_keeps_a_few_files_of_each_kind_and_nothing_else_is_touched(monkeypatch, tmp_path):
    from tipo import tags

    monkeypatch.setenv("TIPO_CACHE", str(tmp_path))
    mine = tmp_path / "notes.marshal"  # a user's file in a shared folder: never removed
    mine.write_bytes(b"x")
    lookalike = tmp_path / "tag-table-notakey-py311.marshal"
    lookalike.write_bytes(b"x")
    old_tmp = tmp_path / ".tag-table-0123456789abcdef0123-py311.marshal.abc123.tmp"  # a killed writer's
    old_tmp.write_bytes(b"x")
    os.utime(old_tmp, (1, 1))
    new_tmp = tmp_path / ".tag-table-1123456789abcdef0123-py311.marshal.abc124.tmp"  # a writer at work
    new_tmp.write_bytes(b"x")
    header = tmp_path / f"gguf-{'a' * 32}.marshal"
    header.write_bytes(b"x")
    table = TagTable.from_tsv_lines(["cat\t0\t10\t"])
    keys = [f"{k:024x}" for k in range(7)]
    for age, key in enumerate(keys):
        tags.cache_table("tag-table", key, table)
        path = tags._cache_path("tag-table", key)
        os.utime(path, (1000 + age, 1000 + age))  # written in this order
    left = sorted(p.name for p in tmp_path.iterdir())
    kept = [k for k in keys if tags._cache_path("tag-table", k).name in left]
    assert kept == keys[-tags.CACHE_KEEP_DEFAULT:]  # the newest few, the one just written among them
    assert tags.cached_table("tag-table", keys[-1]) is not None
    assert mine.exists() and lookalike.exists() and header.exists() and new_tmp.exists()
    assert not old_tmp.exists()
