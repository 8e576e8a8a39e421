import os

from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils import translation
from django.utils.translation import gettext


def note(request):
    out = os.environ.get("I18NPROJ_OUT")
    if out:
        try:
            import uwsgi
            wid = uwsgi.worker_id()
        except ImportError:
            wid = -1
        with open(out, "a") as f:
            f.write("%d %d %s\n" % (os.getpid(), wid, request.get_full_path()))


def index(request):
    note(request)
    return render(request, "pages/index.html", {"language": translation.get_language()})


def hello(request, name):
    note(request)
    return HttpResponse(gettext("Hello") + " " + name)


def site(request):
    note(request)
    return render(request, "site/page.html")


def redirect_home(request):
    note(request)
    return HttpResponseRedirect("/")


def boom(request):
    note(request)
    raise RuntimeError("pages.views.boom fails on purpose")
