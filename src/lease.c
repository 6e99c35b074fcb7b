/* Placeholder: being written. */
#include "core.h"

void forage_open_lease(lua_State *L) { (void)L; }
