#!/usr/bin/env python3
"""Create the benchmark's SQLite database once: migrate + bulk_create a few thousand rows.

The database goes to $COWGUARD_BENCH_CACHE/djangoproj.sqlite3 (default /tmp/cowguard-bench-cache),
never into the repository. It is rebuilt only when missing or when this script, the models or the
migrations change (a stamp file next to it records their hash). Built into a temporary file and
renamed into place, so a half-built database is never used.

Usage: /usr/bin/python3 bench/apps/djangoproj/make_db.py [--force]   (prints the database path)
"""
import hashlib
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
N_CATEGORIES = 24
N_PRODUCTS = 4000
N_REVIEWS = 10000
N_USERS = 50


def source_hash():
    h = hashlib.sha256()
    files = [Path(__file__).resolve(), HERE / "shop" / "models.py"]
    files += sorted((HERE / "shop" / "migrations").glob("*.py"))
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def db_path():
    cache = Path(os.environ.get("COWGUARD_BENCH_CACHE", "/tmp/cowguard-bench-cache"))
    return Path(os.environ.get("COWGUARD_BENCH_DB", str(cache / "djangoproj.sqlite3")))


def populate():
    import random
    from datetime import datetime, timedelta, timezone
    from decimal import Decimal

    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import transaction

    from shop.models import Category, Product, Review

    call_command("migrate", verbosity=0, interactive=False)
    rng = random.Random(20160502)
    words = ("alpha bravo copper delta ember falcon garnet harbor indigo jasper kestrel lumen "
             "marble nickel onyx pepper quartz raven sable tundra umber velvet willow xenon yarrow zephyr").split()
    base = datetime(2023, 1, 1, tzinfo=timezone.utc)
    with transaction.atomic():
        cats = [
            Category(name="%s %s" % (words[i % len(words)], words[(i * 7 + 3) % len(words)]),
                     slug="cat-%02d" % i,
                     description=" ".join(rng.choice(words) for _ in range(25)))
            for i in range(N_CATEGORIES)
        ]
        Category.objects.bulk_create(cats)
        cats = list(Category.objects.all())
        products = [
            Product(category=cats[i % len(cats)],
                    name="%s %s %d" % (rng.choice(words).title(), rng.choice(words), i),
                    sku="SKU-%06d" % i,
                    price=Decimal(rng.randint(99, 99999)) / 100,
                    stock=rng.randint(0, 500),
                    description="\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(4)),
                    created=base + timedelta(minutes=17 * i))
            for i in range(N_PRODUCTS)
        ]
        Product.objects.bulk_create(products, batch_size=500)
        pids = list(Product.objects.values_list("id", flat=True))
        reviews = [
            Review(product_id=rng.choice(pids),
                   author="user%03d" % rng.randint(0, N_USERS - 1),
                   rating=rng.randint(1, 5),
                   body=" ".join(rng.choice(words) for _ in range(rng.randint(10, 60))),
                   created=base + timedelta(minutes=11 * i))
            for i in range(N_REVIEWS)
        ]
        Review.objects.bulk_create(reviews, batch_size=1000)
        User.objects.bulk_create([User(username="user%03d" % i, email="user%03d@example.com" % i)
                                  for i in range(N_USERS)])


def ensure_db(force=False):
    target = db_path()
    stamp = target.with_suffix(target.suffix + ".stamp")
    want = source_hash()
    if not force and target.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(".%s.%d.tmp" % (target.name, os.getpid()))
    if tmp.exists():
        tmp.unlink()
    os.environ["COWGUARD_BENCH_DB"] = str(tmp)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
    sys.path.insert(0, str(HERE))
    import django

    django.setup()
    try:
        populate()
        from django.db import connections

        connections.close_all()
        os.replace(tmp, target)
        stamp.write_text(want + "\n")
    finally:
        if tmp.exists():
            tmp.unlink()
        os.environ["COWGUARD_BENCH_DB"] = str(target)
    return target


if __name__ == "__main__":
    print(ensure_db(force="--force" in sys.argv[1:]))
