/* The sticky resource table (lease.c), as the pool's dispatcher uses it. Slots are
   0-based here (worker slots of the pool, request slots of a crawl); resource indexes
   too; -1 means none. */
#ifndef FORAGE_LEASE_H
#define FORAGE_LEASE_H

#include <stdint.h>

#include "lua.h"

typedef struct lease_table lease_table;

/* The lease table of the forage.Leases userdata at stack index i (raises otherwise). */
lease_table *lease_check(lua_State *L, int i);

int32_t lease_slots(lease_table *t);
/* The resource slot holds, or -1 (a stale entry, of a resource cooled since, is dropped).
   Takes the lock, so that an entry left half-written by a process killed mid-operation is
   repaired before anyone acts on it. */
int32_t lease_held(lease_table *t, int32_t slot);
/* Gives slot a resource (the one with the fewest holders) if it has none; returns what it
   holds, or -1. */
int32_t lease_acquire(lease_table *t, int32_t slot);
/* The slot's resource is free again, unharmed (its worker died or left). */
void lease_release(lease_table *t, int32_t slot);
/* True when every resource is retired: none can ever be leased again. */
int lease_none_left(lease_table *t);
/* Seconds until the next cooling resource may be probed (on probation: leased to one slot
   whose next report decides), or -1 when none is cooling. */
double lease_next_revival(lease_table *t);

#endif
