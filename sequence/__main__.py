from sequence.cli import main

if __name__ == "__main__":  # guarded: spawned worker processes import it too
    main()
