/* Placeholder: being written. */
#include "core.h"

void forage_open_url(lua_State *L) { (void)L; }
