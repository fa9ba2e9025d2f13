"""`python -m inn_jax.train --config quickstart` and `inn-train`: inn_jax.train.cli, in a process
whose malloc asks for huge pages (inn_jax.train.host)."""

from inn_jax.train import host


def main():
  host.start_with_huge_pages()  # First: glibc reads its tunables only when a process starts.
  from inn_jax.train import cli  # Imports JAX.
  return cli.main()


if __name__ == "__main__":
  main()
