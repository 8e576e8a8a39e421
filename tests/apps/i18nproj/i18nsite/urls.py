import os

from django.urls import URLResolver, path
from django.urls.resolvers import RoutePattern

from pages import views

urlpatterns = [
    path("", views.index, name="index"),
    path("hello/<str:name>/", views.hello, name="hello"),
    path("site/", views.site, name="site"),
    path("redirect/", views.redirect_home, name="redirect"),
    path("boom/", views.boom, name="boom"),
]
if os.environ.get("I18NPROJ_LEGACY_URLS") == "1":
    # A URLconf loaded on first use that cannot be imported (a module removed from the project):
    # paths that reach it fail, and so does reverse() of every name.
    urlpatterns.append(URLResolver(RoutePattern("legacy/"), "pages.removed_urls"))
