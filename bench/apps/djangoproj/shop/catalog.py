"""A long-lived in-memory catalog, loaded once per process (in the uWSGI master before the fork
when wsgi.py preloads it): the kind of reference data real apps cache at startup."""
from collections import defaultdict

CATEGORIES = []       # [{"id", "name", "slug"}], ordered by name
PRODUCTS = {}         # id -> {"id", "name", "sku", "price", "category_id"}
BY_CATEGORY = defaultdict(list)   # category id -> [product ids]
BY_PRICE_BAND = defaultdict(list)  # int(price // 10) -> [product ids]


def preload():
    from .models import Category, Product

    CATEGORIES[:] = list(Category.objects.values("id", "name", "slug"))
    PRODUCTS.clear()
    BY_CATEGORY.clear()
    BY_PRICE_BAND.clear()
    for row in Product.objects.values("id", "name", "sku", "price", "category_id"):
        PRODUCTS[row["id"]] = row
        BY_CATEGORY[row["category_id"]].append(row["id"])
        BY_PRICE_BAND[int(row["price"] // 10)].append(row["id"])
    return len(PRODUCTS)


def similar_price(product_id, limit=8):
    row = PRODUCTS.get(product_id)
    if row is None:
        return []
    band = BY_PRICE_BAND.get(int(row["price"] // 10), [])
    return [PRODUCTS[i] for i in band[:limit + 1] if i != product_id][:limit]
