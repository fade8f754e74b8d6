"""Built-in authenticator plugin: API keys and mTLS client certificates."""

from commy.hookspecs import hookimpl


@hookimpl
def commy_register_authenticators(register):
    from commy.auth.api_key import ApiKeyAuthenticator
    from commy.auth.mtls import MtlsAuthenticator

    register("api_key", ApiKeyAuthenticator)
    register("mtls", MtlsAuthenticator)
