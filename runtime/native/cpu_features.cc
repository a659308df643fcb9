// This CPU's architecture and features, named as the kernel's /proc/cpuinfo names them (the names
// runtime/cpu_features.py reads and manifests list), so one manifest means the same to both runtimes.
#include <sys/utsname.h>

#include "internal.h"

#if defined(__aarch64__)
#include <sys/auxv.h>
#elif defined(__x86_64__)
#include <cpuid.h>
#endif

namespace edgevit {

std::string machine_arch() {
  struct utsname name;
  if (uname(&name) != 0) return "";
  std::string arch = name.machine;
  if (arch == "amd64") return "x86_64";
  if (arch == "arm64") return "aarch64";
  return arch;
}

#if defined(__aarch64__)

// arch/arm64/include/uapi/asm/hwcap.h, as runtime/cpu_features.py's AARCH64_HWCAP / AARCH64_HWCAP2.
std::set<std::string> cpu_features() {
  static const struct { int bit; const char *name; } hwcap[] = {
      {0, "fp"}, {1, "asimd"}, {3, "aes"}, {4, "pmull"}, {5, "sha1"}, {6, "sha2"}, {7, "crc32"},
      {8, "atomics"}, {9, "fphp"}, {10, "asimdhp"}, {12, "asimdrdm"}, {13, "jscvt"}, {14, "fcma"},
      {15, "lrcpc"}, {16, "dcpop"}, {17, "sha3"}, {18, "sm3"}, {19, "sm4"}, {20, "asimddp"},
      {21, "sha512"}, {22, "sve"}, {23, "asimdfhm"}};
  static const struct { int bit; const char *name; } hwcap2[] = {
      {1, "sve2"}, {13, "i8mm"}, {14, "bf16"}, {23, "sme"}};
  unsigned long one = getauxval(AT_HWCAP), two = getauxval(AT_HWCAP2);
  std::set<std::string> out;
  for (auto &f : hwcap) if (one >> f.bit & 1) out.insert(f.name);
  for (auto &f : hwcap2) if (two >> f.bit & 1) out.insert(f.name);
  return out;
}

#elif defined(__x86_64__)

// cpuid bits with the kernel's flag names (arch/x86/include/asm/cpufeatures.h). Like the kernel,
// AVX and AVX-512 features count only when the OS saves their registers (XCR0).
std::set<std::string> cpu_features() {
  enum Reg { EAX, EBX, ECX, EDX };
  enum Needs { NONE, YMM, ZMM };
  static const struct { unsigned leaf, sub; Reg reg; int bit; Needs needs; const char *name; } table[] = {
      {1, 0, EDX, 0, NONE, "fpu"}, {1, 0, EDX, 4, NONE, "tsc"}, {1, 0, EDX, 8, NONE, "cx8"},
      {1, 0, EDX, 15, NONE, "cmov"}, {1, 0, EDX, 23, NONE, "mmx"}, {1, 0, EDX, 24, NONE, "fxsr"},
      {1, 0, EDX, 25, NONE, "sse"}, {1, 0, EDX, 26, NONE, "sse2"}, {1, 0, EDX, 28, NONE, "ht"},
      {1, 0, ECX, 0, NONE, "pni"}, {1, 0, ECX, 1, NONE, "pclmulqdq"}, {1, 0, ECX, 9, NONE, "ssse3"},
      {1, 0, ECX, 12, YMM, "fma"}, {1, 0, ECX, 13, NONE, "cx16"}, {1, 0, ECX, 19, NONE, "sse4_1"},
      {1, 0, ECX, 20, NONE, "sse4_2"}, {1, 0, ECX, 22, NONE, "movbe"}, {1, 0, ECX, 23, NONE, "popcnt"},
      {1, 0, ECX, 25, NONE, "aes"}, {1, 0, ECX, 26, NONE, "xsave"}, {1, 0, ECX, 28, YMM, "avx"},
      {1, 0, ECX, 29, YMM, "f16c"}, {1, 0, ECX, 30, NONE, "rdrand"},
      {7, 0, EBX, 3, NONE, "bmi1"}, {7, 0, EBX, 5, YMM, "avx2"}, {7, 0, EBX, 8, NONE, "bmi2"},
      {7, 0, EBX, 16, ZMM, "avx512f"}, {7, 0, EBX, 17, ZMM, "avx512dq"}, {7, 0, EBX, 19, NONE, "adx"},
      {7, 0, EBX, 21, ZMM, "avx512ifma"}, {7, 0, EBX, 28, ZMM, "avx512cd"}, {7, 0, EBX, 29, NONE, "sha_ni"},
      {7, 0, EBX, 30, ZMM, "avx512bw"}, {7, 0, EBX, 31, ZMM, "avx512vl"},
      {7, 0, ECX, 1, ZMM, "avx512vbmi"}, {7, 0, ECX, 6, ZMM, "avx512_vbmi2"}, {7, 0, ECX, 8, NONE, "gfni"},
      {7, 0, ECX, 9, YMM, "vaes"}, {7, 0, ECX, 10, YMM, "vpclmulqdq"}, {7, 0, ECX, 11, ZMM, "avx512_vnni"},
      {7, 0, ECX, 12, ZMM, "avx512_bitalg"}, {7, 0, ECX, 14, ZMM, "avx512_vpopcntdq"},
      {7, 0, EDX, 8, ZMM, "avx512_vp2intersect"}, {7, 0, EDX, 22, NONE, "amx_bf16"},
      {7, 0, EDX, 23, ZMM, "avx512_fp16"}, {7, 0, EDX, 24, NONE, "amx_tile"}, {7, 0, EDX, 25, NONE, "amx_int8"},
      {7, 1, EAX, 4, YMM, "avx_vnni"}, {7, 1, EAX, 5, ZMM, "avx512_bf16"}};
  unsigned max_leaf = __get_cpuid_max(0, nullptr);
  unsigned r[4];
  __cpuid_count(1, 0, r[EAX], r[EBX], r[ECX], r[EDX]);
  uint64_t xcr0 = 0;
  if (r[ECX] >> 27 & 1) {  // OSXSAVE: xgetbv is usable
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = uint64_t(hi) << 32 | lo;
  }
  bool ymm = (xcr0 & 0x6) == 0x6, zmm = ymm && (xcr0 & 0xe0) == 0xe0;
  std::set<std::string> out;
  for (auto &f : table) {
    if (f.leaf > max_leaf) continue;
    __cpuid_count(f.leaf, f.sub, r[EAX], r[EBX], r[ECX], r[EDX]);
    bool usable = f.needs == NONE || (f.needs == YMM ? ymm : zmm);
    if (usable && (r[f.reg] >> f.bit & 1)) out.insert(f.name);
  }
  return out;
}

#else

std::set<std::string> cpu_features() { return {}; }

#endif

}  // namespace edgevit
