from django.contrib import admin
from django.urls import path

from shop import views

urlpatterns = [
    path("", views.index, name="index"),
    path("products/", views.product_list, name="product_list"),
    path("product/<int:pk>/", views.product_detail, name="product_detail"),
    path("category/<slug:slug>/", views.category, name="category"),
    path("visit/", views.visit, name="visit"),
    path("cycles", views.cycles, name="cycles"),
    path("gc", views.gc_state, name="gc_state"),
    path("admin/", admin.site.urls),
]
