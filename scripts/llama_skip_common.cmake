# Passed to the llama-cpp-python build as CMAKE_PROJECT_INCLUDE (scripts/llama_build_flags.py),
# so it runs after every project() call, llama.cpp's own included.
#
# Why: llama-cpp-python sets LLAMA_BUILD_COMMON=ON with FORCE after its project() call, so
# -DLLAMA_BUILD_COMMON=OFF is overridden. That builds llama.cpp's common library and
# cpp-httplib, which the Python binding never loads (it loads libllama and libggml*), and they
# take about half the compile (docs/results/llama_build_common.json). Forcing it back off
# when llama.cpp's project() runs, before its option() reads it, skips them.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama: build common utils library" FORCE)
