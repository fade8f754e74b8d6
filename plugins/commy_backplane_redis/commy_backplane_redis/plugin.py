"""Entry module of the Redis backplane plugin.

Plugin discovery imports this module in every commy process, so it imports nothing
heavy: redis-py and the implementation load when a server picks ``backplane = "redis"``.
"""

from commy import hookimpl


def _redis(config):
    from commy_backplane_redis.backplane import RedisBackplane

    return RedisBackplane(config)


@hookimpl
def commy_register_backplanes(register):
    register("redis", _redis)
