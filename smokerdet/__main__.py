from smokerdet.cli import main

main()
