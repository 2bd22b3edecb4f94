/*
 * park.c - work that waits for the topology to change.  A policy that
 * finds no primary while a failover is under way answers {wait = seconds}
 * instead of refusing the write: the request (embedded) or the client's
 * batch (proxy) is parked here, and routed again each time the roles
 * change (roles.c wakes everything parked), until a decision is made or
 * the wait runs out.  A parked item keeps its first deadline when it is
 * parked again, so re-routing never extends the wait.
 */
#include "internal.h"

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sy_parked *p = sy_container_of(w, sy_parked, deadline);
    sy_list_remove(&p->link);
    p->parked = 0;
    p->until = 0;
    p->expired(p, 0);
}

void sy__park(sy_engine *e, sy_parked *p, double wait)
{
    if (SY_ENGINE_CLOSING(e)) {
        p->until = 0;
        p->expired(p, 1); /* nothing waits past a stop */
        return;
    }
    double now = ev_now(e->loop);
    if (p->until <= 0) {
        p->until = now + wait;
        p->wait = wait;
    }
    if (now >= p->until) {
        p->until = 0;
        p->expired(p, 0);
        return;
    }
    ev_init(&p->deadline, deadline_cb);
    ev_timer_set(&p->deadline, p->until - now, 0.);
    ev_timer_start(e->loop, &p->deadline);
    sy_list_insert_tail(&e->parked, &p->link);
    p->parked = 1;
}

void sy__park_done(sy_engine *e, sy_parked *p)
{
    if (p->parked) {
        ev_timer_stop(e->loop, &p->deadline);
        sy_list_remove(&p->link);
        p->parked = 0;
    }
    p->until = 0;
}

/* Moves everything parked to out first: a retry may park again.  The
 * items stay marked parked while they wait there, so one that is cancelled
 * meanwhile (sy__park_done) leaves that list too. */
static void take_all(sy_engine *e, sy_list *out)
{
    sy_list_init(out);
    sy_list *l;
    while ((l = sy_list_pop_head(&e->parked)) != NULL) {
        ev_timer_stop(e->loop, &sy_container_of(l, sy_parked, link)->deadline);
        sy_list_insert_tail(out, l);
    }
}

static sy_parked *next_of(sy_list *list)
{
    sy_list *l = sy_list_pop_head(list);
    if (!l)
        return NULL;
    sy_parked *p = sy_container_of(l, sy_parked, link);
    p->parked = 0;
    return p;
}

void sy__park_wake_all(sy_engine *e)
{
    sy_list woken;
    take_all(e, &woken);
    sy_parked *p;
    while ((p = next_of(&woken)) != NULL)
        p->retry(p);
}

void sy__park_fail_all(sy_engine *e)
{
    sy_list failed;
    take_all(e, &failed);
    sy_parked *p;
    while ((p = next_of(&failed)) != NULL) {
        p->until = 0;
        p->expired(p, 1);
    }
}
