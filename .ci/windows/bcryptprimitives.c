/* A stand-in for bcryptprimitives.dll, which Wine 8.0 lacks. Rust's standard library (1.78+)
 * and getrandom take their random bytes from its ProcessPrng; without the DLL every Windows
 * binary exits with status 53 under Wine before main. This one fills the buffer from advapi32's
 * RtlGenRandom (SystemFunction036), which Wine has. Used only for the tests under Wine. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk)) {
            return FALSE;
        }
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
