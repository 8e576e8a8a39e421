from . import catalog


def nav(request):
    return {"nav_categories": catalog.CATEGORIES}
