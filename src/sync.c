/* Placeholder: being written. */
#include "core.h"

void forage_open_sync(lua_State *L) { (void)L; }
