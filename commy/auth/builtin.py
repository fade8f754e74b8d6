"""Built-in authenticator plugin: API keys."""

from commy.hookspecs import hookimpl


@hookimpl
def commy_register_authenticators(register):
    from commy.auth.api_key import ApiKeyAuthenticator

    register("api_key", ApiKeyAuthenticator)
