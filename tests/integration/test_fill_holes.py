"""cowguard-fill-holes (issues #14, #15): before the fork the master takes the free blocks of
pymalloc's pools and glibc malloc's free chunks, so a worker's new objects land on fresh pages
instead of pages it shares with the master. tests/apps/heap_holes.py frees 200 chunks of 3 KB
between live ones at import; its requests allocate 200 more of that size and count those that
landed in one of the freed chunks. tests/apps/type_cache_names.py leaves 400 names that only the
type attribute cache holds; the master clears that cache before filling."""
import re

MALLOC_LINE = re.compile(r"\[cowguard\] master: .*filled (\d+) malloc holes \(([\d.]+) MB\) in ([\d.]+) ms")


def reused(uwsgi, fill):
    args = ["--workers", 2, "--module", "heap_holes", "--cowguard-fill-holes", fill]
    u = uwsgi(args).wait_ready()
    answers = u.every_worker("/", 2)
    return u, [d["reused"] for d in answers.values()]


def test_workers_allocate_past_the_masters_free_chunks(uwsgi):
    u, counts = reused(uwsgi, "true")
    m = MALLOC_LINE.search(u.log())
    assert m, u.log()
    # at least the app's 200 chunks of 3 KB (0.6 MB) were taken
    assert int(m.group(1)) >= 200 and float(m.group(2)) >= 0.5, m.group(0)
    assert counts == [0, 0], (counts, u.log()[-2000:])


def test_without_filling_workers_reuse_them(uwsgi):
    """The same app with fill-holes off: the requests do land in the master's free chunks (so the
    test above can fail)."""
    u, counts = reused(uwsgi, "false")
    assert "malloc holes" not in u.log()
    assert all(c > 0 for c in counts), (counts, u.log()[-2000:])


def names_alive(uwsgi, fill):
    u = uwsgi(["--workers", 2, "--module", "type_cache_names", "--cowguard-fill-holes", fill]).wait_ready()
    return u, list(u.every_worker("/", 2).values())


def test_names_only_the_type_cache_holds_die_in_the_master(uwsgi):
    """A worker's lookup that reused their cache entries would free them there and copy their pages."""
    u, answers = names_alive(uwsgi, "true")
    assert [d["alive"] for d in answers] == [0, 0], (answers, u.log()[-2000:])


def test_without_filling_the_type_cache_keeps_them(uwsgi):
    """The control: without the fill some of the names reach the workers alive, so the test above
    can fail. Most do not survive to the fork (why was not measured): 10-11 of 400 reached the
    workers on 3.11, 39-41 on 3.13, 22 on 3.14."""
    u, answers = names_alive(uwsgi, "false")
    assert all(d["alive"] >= d["of"] // 100 for d in answers), (answers, u.log()[-2000:])
