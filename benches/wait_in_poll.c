/* W2 diagnostic (BENCHMARKS.md, "Issue 20, 2026-12-07, morning"): a ping-pong of 68-byte messages
 * between two processes, each side waiting for the next message in one of three ways: 0 a
 * blocking recv(2), 1 poll(2) then recv, 2 epoll_wait(2) then recv (as a reactor). Usage:
 *   gcc -O2 benches/wait_in_poll.c -o /tmp/wait_in_poll
 *   for m in "0 0" "2 0" "2 1" "1 1"; do taskset -c 0 perf stat -e context-switches /tmp/wait_in_poll 0 $m; done
 * (arguments: 1 TCP on 127.0.0.1 or 0 a Unix socketpair, the server's way, the client's way).
 * On one CPU a Unix socket reader asleep in recv costs more than 2 context switches a round trip;
 * one that waits in poll or epoll_wait costs 2. */
#include <sys/socket.h>
#include <sys/epoll.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>
#include <sys/wait.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static int ep=-1;
static void waitrecv(int fd,int how,char*r){
  if(how==1){struct pollfd p={fd,POLLIN,0}; poll(&p,1,-1); recv(fd,r,65536,MSG_DONTWAIT);}
  else if(how==2){struct epoll_event e; epoll_wait(ep,&e,1,-1); recv(fd,r,65536,MSG_DONTWAIT);}
  else recv(fd,r,65536,0);
}
int main(int argc,char**argv){int sv[2]; int tcp=atoi(argv[1]); int sm=atoi(argv[2]), cm=atoi(argv[3]); int N=200000;
 if(!tcp) socketpair(AF_UNIX,SOCK_STREAM,0,sv); else {
  int l=socket(AF_INET,SOCK_STREAM,0);struct sockaddr_in a={0};a.sin_family=AF_INET;a.sin_addr.s_addr=htonl(0x7f000001);
  bind(l,(void*)&a,sizeof a);listen(l,1);socklen_t al=sizeof a;getsockname(l,(void*)&a,&al);
  sv[0]=socket(AF_INET,SOCK_STREAM,0);connect(sv[0],(void*)&a,sizeof a);sv[1]=accept(l,0,0);int one=1;setsockopt(sv[0],IPPROTO_TCP,TCP_NODELAY,&one,4);setsockopt(sv[1],IPPROTO_TCP,TCP_NODELAY,&one,4);}
 char b[68], r[65536]; memset(b,'x',68);
 if(fork()==0){ if(sm==2){ep=epoll_create1(0);struct epoll_event e={EPOLLIN|EPOLLET,{0}};epoll_ctl(ep,EPOLL_CTL_ADD,sv[1],&e);}
   for(int i=0;i<N;i++){ waitrecv(sv[1],sm,r); send(sv[1],b,68,MSG_NOSIGNAL);} exit(0);}
 if(cm==2){ep=epoll_create1(0);struct epoll_event e={EPOLLIN|EPOLLET,{0}};epoll_ctl(ep,EPOLL_CTL_ADD,sv[0],&e);}
 double t=now();
 for(int i=0;i<N;i++){ send(sv[0],b,68,MSG_NOSIGNAL); waitrecv(sv[0],cm,r);} double a=now()-t; wait(0);
 printf("%s server %d client %d %.0f ns/rtt\n", tcp?"tcp":"unix", sm, cm, a/N*1e9);
}
