"""How a run lays itself out on the cluster's resources: the labeler actors (one per GPU, or
CPU actors without GPUs), how many calls each serves at once, and how many shard tasks stay in
flight. Pure arithmetic on Ray's resource totals, so it is tested without a cluster.

On a node of 16 CPUs + 1 GPU: one GPU actor holding 1 CPU and serving 2 calls at once (one
call's pixels arrive and upload while the other's run on the GPU), and 15 shard tasks, one per
remaining CPU, distorting and encoding, each making its next reference while the labels of
one are made on the GPU. Without GPUs the actors take part of the CPUs (the labels are the
costly stage there) and the shard tasks the rest, each making one reference at a time: the
actors' torch threads use every core while the shard tasks wait on them. Whatever the counts, the
actors leave the shard tasks one whole CPU at least (a task needs one: without it no shard
would ever start)."""

from dataclasses import dataclass

from pipeline.errors import LabelersUnavailableError

GPU_ACTOR_CONCURRENCY = 2   # calls a GPU actor serves at once (threads)
CPUS_PER_CPU_ACTOR = 4      # without GPUs: one labeler actor per this many CPUs
MAX_CPU_ACTOR_SHARE = 2.0   # ... each holding at most this many CPUs
MIN_CPU_ACTOR_SHARE = 0.25  # ... and at least this many, but one actor where none is spare


@dataclass(frozen=True)
class Layout:
    actors: int
    actor_resources: dict[str, float]   # Ray resources of one actor
    threads: int                        # torch threads of one actor
    concurrency: int                    # calls one actor serves at once
    in_flight: int                      # shard tasks the driver keeps in flight
    overlap: bool = False               # a shard task makes its next reference meanwhile
    room: int = 0                       # shard tasks the CPUs the actors leave can run

    def to_json(self) -> dict:
        return {"actors": self.actors, "actor_resources": self.actor_resources,
                "actor_threads": self.threads, "actor_concurrency": self.concurrency,
                "max_in_flight": self.in_flight, "overlap": self.overlap}


def layout(cpus: float, gpus: int, actors: int | None = None,
           max_in_flight: int | None = None, labelled: bool = True,
           node_cpus: float | None = None) -> Layout:
    """The layout for a cluster of `cpus` CPUs and `gpus` GPUs in all, whose largest node has
    `node_cpus` (None: one node); `actors` and `max_in_flight` override the derived numbers
    (a GPU actor holds a whole GPU: more than `gpus` are refused). A label-free run has no
    actors: its shard tasks take every CPU."""
    if not labelled:
        return Layout(0, {}, 0, 0, max_in_flight or max(1, int(cpus)))
    spare = max(0.0, cpus - 1)  # what the actors may hold: the shard tasks need a whole CPU
    if gpus:
        count = actors or gpus
        if count > gpus:  # the others would wait for a GPU until the start's time-out
            raise LabelersUnavailableError(
                f"--actors {count} on {gpus} GPU(s): each GPU labeler actor holds a whole GPU; "
                f"at most {gpus} here")
        # a CPU each (it decodes nothing: pixels come raw) where the cluster has a CPU more
        # than actors, none otherwise: then some node keeps a whole CPU for shard tasks
        # (were every node's CPUs no more than its GPUs, the CPUs would be no more than the
        # actors); a fraction each could leave every node a fraction short
        actor_cpu = 1.0 if spare >= count else 0.0
        resources, threads, concurrency = {"num_gpus": 1, "num_cpus": actor_cpu}, 1, \
            GPU_ACTOR_CONCURRENCY
        actor_cpus = actor_cpu * count
    else:
        count = actors or max(1, int(cpus // CPUS_PER_CPU_ACTOR))
        fit = max(1, int(spare / MIN_CPU_ACTOR_SHARE))  # one always: with no CPU to spare,
        if count > fit:                                 # it holds none (as by default)
            raise LabelersUnavailableError(
                f"--actors {count} on {cpus:g} CPUs: each CPU labeler actor needs "
                f"{MIN_CPU_ACTOR_SHARE} CPU at least and the shard tasks one whole CPU; at "
                f"most {fit} actor(s) here")
        # no more than a node holds: on nodes of 1 CPU an actor of 2 would never start
        share = min(MAX_CPU_ACTOR_SHARE, spare / count, node_cpus or cpus)
        # labelling is the bottleneck: each actor's torch may use its share of every core
        resources, threads, concurrency = {"num_cpus": share}, max(1, int(cpus // count)), 1
        actor_cpus = share * count
    # no more than the CPUs the actors leave: a shard task queued beyond them would take the
    # CPU of a labeler that died, whose restart then waits for one while every shard task
    # waits on its labels (a run on 2 CPUs hung)
    room = max(1, int(cpus - actor_cpus))
    return Layout(count, resources, threads, concurrency, max_in_flight or room,
                  overlap=bool(gpus), room=room)


def layout_line(resources: dict[str, float], chosen: Layout) -> str:
    """What a run found and how it lays itself out, for its log: it is sized once, at its
    start, so nodes that join later (an autoscaler's, a worker still booting) go unused."""
    gpus = int(resources.get("GPU", 0))
    where = "GPU" if chosen.actor_resources.get("num_gpus") else "CPU"
    actors = (f"{chosen.actors} labeler actor(s) on {where}" if chosen.actors
              else "no labeler actor (label-free)")
    line = (f"the cluster has {resources.get('CPU', 0):g} CPUs and {gpus} GPUs now: {actors}, "
            f"{chosen.in_flight} shard tasks in flight; nodes that join later are not used")
    if chosen.actors and chosen.in_flight > chosen.room:
        line += (f" (--max-in-flight {chosen.in_flight}: more than the {chosen.room} the CPUs "
                 "the actors leave run; a labeler that dies waits for a CPU to restart on, "
                 "and the shards waiting on its labels hold them)")
    if not gpus and chosen.actors:
        line += " (no GPU: labels on CPU, slowly; start GPU workers first, see `ray status`)"
    return line
