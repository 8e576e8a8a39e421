import gc
import json
import os

from django.core.paginator import Paginator
from django.db.models import Avg, Count
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render

from . import catalog
from .models import Category, Product, Review

RECIPE = os.environ.get("COWGUARD_BENCH_RECIPE", "").strip()


def index(request):
    categories = list(Category.objects.all())
    for c in categories:  # product counts from the preloaded catalog, not a GROUP BY per request
        c.n_products = len(catalog.BY_CATEGORY.get(c.pk, ()))
    latest = Product.objects.select_related("category").order_by("-created")[:20]
    return render(request, "shop/index.html", {"categories": categories, "latest": latest})


def product_list(request):
    page = Paginator(Product.objects.select_related("category").order_by("id"), 25).get_page(
        request.GET.get("page") or 1
    )
    # ratings for this page only: one grouped query over the page's ids
    ratings = {
        r["product_id"]: r
        for r in Review.objects.filter(product_id__in=[p.pk for p in page])
        .values("product_id")
        .annotate(avg=Avg("rating"), n=Count("id"))
    }
    for p in page:
        r = ratings.get(p.pk)
        p.avg_rating, p.n_reviews = (r["avg"], r["n"]) if r else (None, 0)
    return render(request, "shop/product_list.html", {"page": page})


def product_detail(request, pk):
    product = get_object_or_404(Product.objects.select_related("category"), pk=pk)
    reviews = list(product.reviews.all()[:20])
    related = Product.objects.filter(category_id=product.category_id).exclude(pk=pk).order_by("-created")[:8]
    return render(
        request,
        "shop/product_detail.html",
        {
            "product": product,
            "reviews": reviews,
            "related": related,
            "similar": catalog.similar_price(pk),
            "avg_rating": sum(r.rating for r in reviews) / len(reviews) if reviews else None,
        },
    )


def category(request, slug):
    cat = get_object_or_404(Category, slug=slug)
    products = cat.products.select_related("category").order_by("name")[:25]
    return render(request, "shop/category.html", {"category": cat, "products": products})


def visit(request):
    """Uses the session (a DB write): not part of the benchmark load."""
    request.session["visits"] = request.session.get("visits", 0) + 1
    return HttpResponse("visits: %d\n" % request.session["visits"], content_type="text/plain")


class _Node:
    __slots__ = ("peer", "payload", "__weakref__")

    def __init__(self, payload):
        self.peer = None
        self.payload = payload


def cycles(request):
    """Same as gcheavy's /cycles: 200 objects in reference cycles, each holding ~1 KB."""
    for _ in range(100):
        a = _Node(bytearray(1024))
        b = _Node(bytearray(1024))
        a.peer = b
        b.peer = a
    return HttpResponse("cycles 200\n", content_type="text/plain")


def gc_state(request):
    return JsonResponse(
        {
            "pid": os.getpid(),
            "isenabled": gc.isenabled(),
            "threshold": list(gc.get_threshold()),
            "freeze_count": gc.get_freeze_count(),
            "count": list(gc.get_count()),
            "recipe": RECIPE or None,
            "catalog_products": len(catalog.PRODUCTS),
        }
    )
