# -*- coding: utf-8 -*-

"""
requests.session
~~~~~~~~~~~~~~~~

This module provides a Session object to manage and persist settings across
requests (cookies, auth, proxies).
(Reduced: the redirect handling of requests 2.19.)
"""
from .auth import _basic_auth_str
from .compat import urlparse
from .utils import get_netrc_auth


class SessionRedirectMixin(object):

    def get_redirect_target(self, resp):
        """Receives a Response. Returns a redirect URI or ``None``"""
        if resp.is_redirect:
            location = resp.headers['location']
            return location
        return None

    def rebuild_proxies(self, prepared_request, proxies):
        """This method re-evaluates the proxy configuration by considering the
        environment variables."""
        headers = prepared_request.headers
        new_proxies = proxies if proxies is not None else {}
        if 'Proxy-Authorization' in headers:
            del headers['Proxy-Authorization']
        return new_proxies
