"""A second ACME client (python3-acme) and a challenge responder for it.

The harness tests use it to show that Pebble, the DNS server and the proxy
work before any of our code is involved; other tests may use it as an
independent implementation to compare with.
"""

import datetime
import http.server
import threading

import josepy as jose
from acme import challenges, client, crypto_util, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from procs import LOOPBACK

ACME_TIMEOUT = 60


def _new_key_pem():
    key = ec.generate_private_key(ec.SECP256R1())
    return key, key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())


class Http01Responder:
    """Answers http-01 validation requests on ``port`` from ``self.tokens``."""

    PREFIX = "/.well-known/acme-challenge/"

    def __init__(self, port, host=LOOPBACK):
        responder = self
        self.tokens = {}            # token -> key authorization
        self.hits = []              # paths requested

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                responder.hits.append(self.path)
                answer = responder.tokens.get(self.path[len(Http01Responder.PREFIX):]) \
                    if self.path.startswith(Http01Responder.PREFIX) else None
                body = (answer or "not found").encode()
                self.send_response(200 if answer else 404)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args):
                pass

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class ReferenceClient:
    """python3-acme's ClientV2 with a fresh P-256 account key.

    ``ca_file`` is the trust anchor for the directory's HTTPS listener.
    """

    def __init__(self, directory_url, ca_file, timeout=ACME_TIMEOUT):
        self.account_key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        self.net = client.ClientNetwork(self.account_key, alg=jose.ES256,
                                        verify_ssl=str(ca_file), user_agent="autotls-tests",
                                        timeout=timeout)
        self.directory = client.ClientV2.get_directory(directory_url, self.net)
        self.acme = client.ClientV2(self.directory, self.net)

    def register(self, email="admin@example.com", eab=None):
        """Create the account; ``eab`` is (kid, b64url HMAC key) when required."""
        binding = None
        if eab is not None:
            kid, hmac_key = eab
            binding = messages.ExternalAccountBinding.from_data(
                account_public_key=self.account_key.public_key(), kid=kid,
                hmac_key=hmac_key, directory=self.directory)
        return self.acme.new_account(messages.NewRegistration.from_data(
            email=email, terms_of_service_agreed=True, external_account_binding=binding))

    def new_order(self, names):
        """(order resource, certificate key PEM) for a fresh key and CSR."""
        _, key_pem = _new_key_pem()
        csr_pem = crypto_util.make_csr(key_pem, list(names))
        return self.acme.new_order(csr_pem), key_pem

    def answer_http01(self, order, responder):
        """Publish every http-01 challenge of ``order`` in ``responder``; answer them."""
        for authz in order.authorizations:
            chall = _challenge(authz, challenges.HTTP01)
            response, validation = chall.response_and_validation(self.account_key)
            responder.tokens[chall.chall.encode("token")] = validation
            self.acme.answer_challenge(chall, response)

    def answer_dns01(self, order, publish):
        """``publish(record_name, value)`` each dns-01 TXT record; answer them.

        Returns the [(record_name, value)] published.
        """
        published = []
        for authz in order.authorizations:
            chall = _challenge(authz, challenges.DNS01)
            response, validation = chall.response_and_validation(self.account_key)
            name = chall.chall.validation_domain_name(authz.body.identifier.value)
            publish(name, validation)
            published.append((name, validation))
            self.acme.answer_challenge(chall, response)
        return published

    def finalize(self, order, timeout=ACME_TIMEOUT):
        """Wait for the authorizations, finalize, download every chain."""
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout)
        order = self.acme.poll_authorizations(order, deadline)
        return self.acme.finalize_order(order, deadline, fetch_alternative_chains=True)

    def issue_http01(self, names, responder):
        """Run a whole http-01 issuance; returns the finalized order resource."""
        self.register()
        order, _ = self.new_order(names)
        self.answer_http01(order, responder)
        return self.finalize(order)


def _challenge(authz, kind):
    for chall in authz.body.challenges:
        if isinstance(chall.chall, kind):
            return chall
    raise AssertionError(f"no {kind.typ} challenge offered for {authz.body.identifier.value}")
